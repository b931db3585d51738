# SPDX-License-Identifier: Apache-2.0
"""The build's steps, in the order :func:`run_build` runs them.

1. :func:`fetch_step`: the llama.cpp source (fetched once, then cached);
2. :func:`declarations_step`: the C declarations: ``include/llama.cdef.h`` for the pinned
   llama.cpp; for another one generated from its ``llama.h`` (needs pycparser);
3. :func:`probe_step`: the struct layout and enum values that ``llama.h`` gives the declarations
   (seconds: a declaration mismatch fails before the long compile);
4. :func:`configure_step`: CMake configure (skipped when nothing changed);
5. :func:`build_step`: libllama and the ggml libraries (and the tools, and the server);
6. :func:`install_step`: the libraries into the prefix, staged first, then moved into place;
7. :func:`manifest_step`: ``manifest.json`` beside them (and generated declarations), atomically, last.

Nothing before the install step writes into the install folder, so a failing step leaves the
previous install (libraries and manifest) as it was.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from llamabuild import cdef, cmake, install, paths, pins, probe, process
from llamabuild import source as sources
from llamabuild.cdef import Declarations
from llamabuild.cmake import RPATH_INCLUDE_TEXT, build_targets, configure_needed, configure_stamp, prepare_reconfigure
from llamabuild.files import fresh_log, read_json, write_json_atomic, write_text_atomic
from llamabuild.install import InstallResult
from llamabuild.manifest import build_manifest
from llamabuild.plan import Plan
from llamabuild.report import BuildError, StepFailed, Timer, log_tail, say
from llamabuild.source import Source


def run_build(plan: Plan, args: argparse.Namespace, started: float) -> int:
    """The steps, in order: fetch, probe, configure, build, install, manifest.

    The probe needs only llama.h, so a declaration mismatch fails in seconds, before
    the long compile; nothing before the install step writes into the prefix, and the
    manifest is written last, atomically.
    """
    if not shutil.which("cmake"):
        raise BuildError("cmake is not on PATH (CMake >= 3.14 is needed)")
    logs = prepare_build_dir(plan.build_dir, args.clean)
    source = fetch_step(plan, args, logs)
    decls = declarations_step(plan, source, args.cdef)
    layout = probe_step(plan, source, decls, logs)
    configure_step(plan, logs, args.verbose)
    build_step(plan, logs, args.jobs, args.verbose)
    result = install_step(plan)
    manifest_step(plan, source, result, layout, decls, started)
    say(f"done in {time.monotonic() - started:.1f} s: {plan.prefix}")
    return 0


def declarations_step(plan: Plan, source: Source, cdef_file: Path) -> Declarations:
    """Step 2: the pinned declarations, or for another llama.cpp, ones generated from its llama.h."""
    with Timer("cdef") as t:
        if plan.key is None or cdef_file != paths.CDEF_PATH:
            text, structs = cdef.read_cdef(cdef_file)
            t.detail = paths.display_path(cdef_file)
            return Declarations(text, structs, paths.display_path(cdef_file))
        header = source.directory / "include" / "llama.h"
        label = f"{source.location} (llama.cpp {source.commit or 'commit unknown'}) include/llama.h"
        text = cdef.generate_cdef(header, label)
        try:
            structs = cdef.parse_cdef_structs(text)
        except ValueError as exc:
            raise BuildError(f"the declarations generated from {header} do not parse: {exc}") from exc
        t.detail = f"generated from {header} ({len(structs)} structs)"
        return Declarations(text, structs, f"the declarations generated from {header}", generated=True)


def prepare_build_dir(build_dir: Path, clean: bool) -> Path:
    """Wipe ``build_dir`` for --clean (only if it looks like one); return its logs folder."""
    if clean and build_dir.exists():
        looks_built = any((build_dir / f).exists() for f in ("CMakeCache.txt", paths.STAMP_NAME, "logs"))
        if not looks_built and any(build_dir.iterdir()):
            why = "does not look like a build folder; not wiping it"
            raise BuildError(f"--clean: {build_dir} {why}")
        shutil.rmtree(build_dir)
        say(f"clean     removed {build_dir}")
    logs = build_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs


def fetch_step(plan: Plan, args: argparse.Namespace, logs: Path) -> Source:
    """Step 1: the llama.cpp source, from the cache when it is there."""
    with Timer("source") as t:
        source = _obtain_source(plan, args, logs / "source.log")
        how = f"cached ({source.kind})" if source.reused else source.kind
        t.detail = f"{how} {source.directory} (llama.cpp {source.commit_label})"
    return source


def _obtain_source(plan: Plan, args: argparse.Namespace, log: Path) -> Source:
    if plan.source_kind == "path":
        return sources.path_source(plan.source_dir)
    if plan.source_kind == "cached":
        source = sources.load_cached_source(plan.source_dir)
        if source is not None:
            source.reused = True
            return source
    if args.llama_cpp_python:
        what = f"pip download {pins.PROJECT}=={args.llama_cpp_python}"
        say(f"source    fetching the llama.cpp of {pins.PROJECT} {args.llama_cpp_python} via {what}")
        return sources.fetch_sdist_version(args.llama_cpp_python, plan.cache_dir, fresh_log(log), verbose=args.verbose)
    kind = "git" if plan.source_kind == "git" else "pypi"
    if kind == "git":
        what = f"git clone of {pins.GIT_URL}"
    elif args.sdist is not None:
        what = f"the sdist {args.sdist}"
    else:
        what = f"pip download {pins.PROJECT}=={pins.SDIST_VERSION} (up to a minute or two)"
    say(f"source    fetching llama.cpp {pins.LLAMA_CPP_COMMIT[:12]} via {what}")
    return sources.fetch_source(kind, plan.cache_dir, fresh_log(log), sdist=args.sdist, verbose=args.verbose)


def probe_step(plan: Plan, source: Source, decls: Declarations, logs: Path) -> dict[str, dict[str, Any]]:
    """Step 3: the real layout of the declarations' structs and the values of their enum constants
    (kept in ``decls.enum_values``), measured against llama.h by :mod:`llamabuild.probe`."""
    with Timer("probe") as t:
        compiler = probe.probe_compiler(plan.options, plan.build_dir)
        work = plan.build_dir / "embellama-probe"
        names = cdef.parse_cdef_enums(decls.text)
        layout, decls.enum_values = probe.run_probe(
            source.directory, work, decls.structs, names, compiler, source.commit_label, logs / "probe.log", decls.name
        )
        t.detail = ", ".join(f"{name} {info['size']} B" for name, info in layout.items())
        t.detail += f"; {len(decls.enum_values)} enum values"
    return layout


def configure_step(plan: Plan, logs: Path, verbose: bool) -> None:
    """Step 4: CMake configure, unless the build folder has these options already."""
    build_dir = plan.build_dir
    with Timer("configure") as t:
        stamp = configure_stamp(plan.configure_cmd, plan.source_dir, plan.generator)
        reason = configure_needed(build_dir, stamp)
        if reason is not None:
            prepare_reconfigure(build_dir, stamp)  # may empty the build folder
        if plan.with_tools:
            include = build_dir / paths.RPATH_INCLUDE_NAME
            if not include.is_file() or include.read_text(encoding="utf-8") != RPATH_INCLUDE_TEXT:
                include.write_text(RPATH_INCLUDE_TEXT, encoding="utf-8")
        if reason is None:
            t.detail = "skipped: options and source unchanged"
            return
        say(f"configure running ({reason})")
        log = fresh_log(logs / "configure.log")
        try:
            process.run_step("configure", plan.configure_cmd, log, verbose=verbose, progress=True)
        except StepFailed as exc:
            if plan.backend == "cuda" and "cublas" in "\n".join(log_tail(exc.log, 200)).lower():
                exc.hint = (
                    "ggml-cuda links cuBLAS, which this CUDA toolkit lacks: install it with the toolkit, or "
                    "`pip install nvidia-cublas` (CUDA 13; nvidia-cublas-cu12 for CUDA 12) into the Python "
                    "that runs build_llama.py, which then finds it"
                )
            raise
        write_json_atomic(build_dir / paths.STAMP_NAME, stamp)
        t.detail = f"{plan.generator or 'default generator'}, {len(plan.options)} options"


def build_step(plan: Plan, logs: Path, jobs: int, verbose: bool) -> None:
    """Step 5: compile libllama and the ggml libraries (and the tools, and the server)."""
    with Timer("build") as t:
        targets = " ".join(build_targets(plan.with_tools, plan.with_server))
        env = dict(os.environ, NINJA_STATUS="[%f/%t] ")
        log = fresh_log(logs / "build.log")
        output = process.run_step("build", plan.build_cmd, log, env=env, verbose=verbose, progress=True)
        if "no work to do" in output:
            t.detail = f"{targets}: up to date"
        else:
            counts = [m.group(2) for m in re.finditer(r"^\[(\d+)/(\d+)\]", output, re.MULTILINE)]
            steps = f", {counts[-1]} steps" if counts else ""
            t.detail = f"{targets} with {jobs} jobs{steps}"


def install_step(plan: Plan) -> InstallResult:
    """Step 6: the libraries (and tools) into the prefix; see :func:`install_outputs`."""
    with Timer("install") as t:
        previous = read_json(plan.prefix / paths.MANIFEST_NAME)
        tools = cmake.installed_tools(plan.with_tools, plan.with_server)
        result = install.install_outputs(plan.build_dir / "bin", plan.prefix, tools, previous)
        tally = f"{result.copied} copied, {result.unchanged} unchanged, {result.removed} removed"
        t.detail = f"{tally} -> {plan.prefix}"
    return result


def manifest_step(
    plan: Plan,
    source: Source,
    result: InstallResult,
    layout: dict[str, dict[str, Any]],
    decls: Declarations,
    started: float,
) -> None:
    """Step 7: ``manifest.json`` beside the libraries, replaced atomically (after the
    generated declarations of a non-pinned build, which it names)."""
    with Timer("manifest") as t:
        seconds = round(time.monotonic() - started, 2)
        manifest = build_manifest(plan, source, result, layout, decls.text, seconds)
        manifest["enums"] = decls.enum_values
        if decls.generated:
            write_text_atomic(plan.prefix / paths.CDEF_NAME, decls.text)
            manifest["cdef"] = paths.CDEF_NAME
        path = plan.prefix / paths.MANIFEST_NAME
        write_json_atomic(path, manifest)
        t.detail = str(path)
