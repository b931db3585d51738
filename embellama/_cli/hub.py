# SPDX-License-Identifier: Apache-2.0
"""``embellama pull`` (a Hub GGUF into the Hugging Face cache) and ``ls`` (the GGUFs that cache holds)."""

from __future__ import annotations

import argparse
import json

from embellama._cli.common import Subparsers
from embellama._exceptions import ConfigurationError
from embellama._hub import cache as hub_cache
from embellama._hub.reference import is_reference, parse_reference
from embellama._hub.resolve import resolve

__all__ = ["add_parsers", "ls_command", "pull_command"]


def pull_command(args: argparse.Namespace) -> int:
    """``embellama pull REPO [FILE]``: the file from the cache, or downloaded into it; prints its path."""
    repo, filename, revision = args.repo, args.file, args.revision
    if is_reference(repo):
        ref = parse_reference(repo)
        if filename is not None and ref.filename is not None:
            raise ConfigurationError(f"{repo} names a file already; drop FILE ({filename!r})")
        repo, filename, revision = ref.repo_id, filename or ref.filename, revision or ref.revision
    found = resolve(repo, filename, revision=revision, cache_dir=args.cache_dir)
    size = found.path.stat().st_size / 2**20
    print(f"hf://{found.repo_id}/{found.filename} ({size:.1f} MiB, commit {found.commit[:12]}): {found.path}")
    return 0


def ls_command(args: argparse.Namespace) -> int:
    """``embellama ls``: the cached GGUF files, with their repository, size and revision."""
    cache = hub_cache.hub_cache_dir(args.cache_dir)
    files = hub_cache.scan_cache(cache)
    if args.json:
        rows = [
            {
                "repo_id": f.repo_id,
                "filename": f.filename,
                "size": f.size,
                "revisions": list(f.revisions),
                "commit": f.commit,
                "path": str(f.path),
            }
            for f in files
        ]
        print(json.dumps(rows, indent=2))
        return 0
    total = sum(f.size for f in files)
    print(f"{cache}: {len(files)} GGUF file(s), {total / 2**20:.1f} MiB")
    width = max([len(f.repo_id) for f in files] + [4])
    for f in files:
        revision = ",".join(f.revisions) or f.commit[:12]
        print(f"  {f.repo_id:<{width}}  {f.filename}  {f.size / 2**20:.1f} MiB  {revision}")
    return 0


def add_parsers(sub: Subparsers) -> None:
    """The ``pull`` and ``ls`` subcommands."""
    pull = sub.add_parser(
        "pull",
        help="download a Hub GGUF into the Hugging Face cache (a cached one is not fetched again)",
        description=(
            "Finds REPO's FILE (a name, a glob such as '*Q8_0.gguf', or none for the repository's one GGUF) in "
            "the Hugging Face cache, else downloads it there (needs embellama[hub]; refused with HF_HUB_OFFLINE=1) "
            "and checks its sha256. Prints the cached file's path. REPO may be an hf:// reference."
        ),
    )
    pull.add_argument("repo", help="org/repo, or hf://org/repo[@revision]/file")
    pull.add_argument("file", nargs="?", help="the file or a glob (default: the repository's one GGUF)")
    pull.add_argument("--revision", help="branch, tag or commit (default: main)")
    pull.add_argument("--cache-dir", help="the Hugging Face cache (default: $HF_HUB_CACHE, $HF_HOME/hub, ...)")
    pull.set_defaults(func=pull_command)
    ls = sub.add_parser("ls", help="list the GGUF files in the Hugging Face cache")
    ls.add_argument("--cache-dir", help="the Hugging Face cache (default: $HF_HUB_CACHE, $HF_HOME/hub, ...)")
    ls.add_argument("--json", action="store_true", help="one JSON list")
    ls.set_defaults(func=ls_command)
